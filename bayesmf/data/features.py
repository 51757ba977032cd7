r"""Feature sets for factorization machines: which relation blocks a :class:`~bayesmf.data.design.Design`
has, learned from training ratings and applied to any (user, item) pairs.

A :class:`Features` is a frozen description (what a notebook or an experiment file declares);
:meth:`Features.fit` learns what it needs from the training :class:`~bayesmf.data.ratings.Ratings`
(the index spaces; categorical levels and implicit-feedback sets when those groups exist) and
returns a :class:`FittedFeatures`, whose :meth:`FittedFeatures.design` builds the design of any
pairs, also of users and items without training ratings (cold start: their one-hot rows are
empty unless the index exists, side features still apply).

With ``user`` and ``item`` alone the factorization machine is BPMF with biases: ``f(x) = w_0 +
w_u + w_i + <v_u, v_i>`` (Rendle 2010, section on matrix factorization as an FM).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bayesmf.data.design import Block, Design, check_design
from bayesmf.data.ratings import Ratings
from bayesmf.validate import as_indices

__all__ = ["Features", "FittedFeatures", "one_hot_block"]


def one_hot_block(name: str, owner: str, index, n_rows: int, first_column: int) -> Block:
    """The block ``X = I`` (``n_rows`` columns starting at ``first_column``): row ``k`` has the
    single feature ``first_column + k`` with value 1."""
    return Block(name, owner, np.asarray(index, np.int32), np.arange(n_rows + 1, dtype=np.int64),
                 np.arange(first_column, first_column + n_rows, dtype=np.int32), np.ones(n_rows, np.float32),
                 int(n_rows))


@dataclasses.dataclass(frozen=True)
class Features:
    """The feature groups of a factorization machine.

    Parameters
    ----------
    user, item : bool
        The user's and the item's one-hot index (groups ``"user"`` and ``"item"``).
    """

    user: bool = True
    item: bool = True

    def fit(self, train: Ratings) -> FittedFeatures:
        """Learn the index spaces (and whatever else a group needs) from the training ratings."""
        return FittedFeatures(self, train.n_users, train.n_items)


@dataclasses.dataclass(frozen=True)
class FittedFeatures:
    """:class:`Features` fitted to training data: builds designs for any pairs."""

    spec: Features
    n_users: int
    n_items: int

    def design(self, users, items, timestamps=None) -> Design:
        """The design of the pairs ``(users[r], items[r])`` (int arrays of one length; timestamps
        for time groups)."""
        users = as_indices(users, "users", self.n_users)
        items = as_indices(items, "items", self.n_items)
        blocks, names, groups, group_names = [], [], [], []
        if self.spec.user:
            blocks.append(one_hot_block("user", "user", users, self.n_users, len(names)))
            names += [f"user={u}" for u in range(self.n_users)]
            groups += [len(group_names)] * self.n_users
            group_names.append("user")
        if self.spec.item:
            blocks.append(one_hot_block("item", "item", items, self.n_items, len(names)))
            names += [f"item={i}" for i in range(self.n_items)]
            groups += [len(group_names)] * self.n_items
            group_names.append("item")
        return check_design(Design(tuple(blocks), tuple(names), np.asarray(groups, np.int32), tuple(group_names)))

    def design_of(self, ratings: Ratings) -> Design:
        """The design of a :class:`Ratings`' pairs (in its row order)."""
        return self.design(ratings.users, ratings.items, ratings.timestamps)
