"""Tiny MovieLens side files in the exact published formats (written into a temporary folder)."""

from __future__ import annotations

from pathlib import Path

GENRES = ["unknown", "Action", "Comedy", "Drama"]

U_USER = "1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|T8H1N\n4|40|F|other|32067\n"
# id|title|release date|video date|url|4 genre flags; item 3 has no release date, item 2 a latin-1 title
U_ITEM = (
    "1|Toy Story (1995)|01-Jan-1995||http://x/1|0|0|1|0\n"
    "2|Mis\xe9rables, Les (1995)|01-Jan-1995||http://x/2|0|1|1|1\n"
    "3|unknown||||1|0|0|0\n"
    "4|Old Film (1950)|15-Mar-1950||http://x/4|0|0|0|1\n"
)
U_GENRE = "".join(f"{g}|{k}\n" for k, g in enumerate(GENRES)) + "\n"  # the published file ends with a blank line
U_DATA = "1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t4\t878542960\n3\t3\t2\t876893119\n4\t4\t1\t889751712\n"

USERS_DAT = "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n"
MOVIES_DAT = (
    "1::Toy Story (1995)::Animation|Children's|Comedy\n"
    "2::Mis\xe9rables, Les (1995)::Drama|Musical\n"
    "3::Heat (1995)::Action|Crime|Thriller\n"
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("latin-1"))
    return path


def write_ml100k(root: Path, **override) -> Path:
    """``root/ml-100k`` with u.user, u.item, u.genre and a 5-line u.data; ``override`` replaces a
    file's text (keys ``u_user``, ``u_item``, ``u_genre``)."""
    folder = root / "ml-100k"
    for name, text in (("u.user", U_USER), ("u.item", U_ITEM), ("u.genre", U_GENRE), ("u.data", U_DATA)):
        write(folder / name, override.get(name.replace(".", "_"), text))
    return folder


def write_ml1m(root: Path) -> Path:
    folder = root / "ml-1m"
    write(folder / "users.dat", USERS_DAT)
    write(folder / "movies.dat", MOVIES_DAT)
    write(folder / "ratings.dat", "1::1::5::978300760\n2::2::3::978302109\n3::3::4::978301968\n")
    return folder
