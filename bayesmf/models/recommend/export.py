"""Export of a fitted model's factors for scoring in another system (Parquet or CSV + JSON)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bayesmf.errors import ConfigError

__all__ = ["ExportMixin"]


class ExportMixin:
    """:meth:`export_factors`."""

    def export_factors(self, path, format: str = "parquet") -> Path:  # noqa: A002
        """Write the factors for scoring in another system, atomically (like :meth:`save`).

        Parameters
        ----------
        path : str or Path
            Output directory (replaced when it holds an earlier export).
        format : {"parquet", "csv"}
            ``"parquet"`` needs pyarrow.

        Returns
        -------
        Path
            The directory, holding ``users.<ext>`` and ``items.<ext>`` (a raw-ID column
            ``user``/``item``, ``bias`` when the model has that bias, ``f0 .. f{r-1}`` the factors,
            posterior means for Bayesian models) and ``factors.json`` (``global_mean``, ``rank``,
            ``rating_scale`` and the scoring rule ``mu + b_u + c_i + sum_f u_f * i_f``).
        """
        import json

        import pandas as pd

        from bayesmf.models.persist import write_dir_atomically

        self._require_fitted()
        if format not in ("parquet", "csv"):
            raise ConfigError(f"format must be 'parquet' or 'csv', got {format!r}")
        if format == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                msg = "format='parquet' needs pyarrow (pip install 'bayesmf[parquet]'); or use format='csv'"
                raise ConfigError(msg) from None
        factors = self.user_factors_ if self.user_factors_ is not None else self.item_factors_
        rank = 0 if factors is None else int(np.asarray(factors).shape[1])

        def table(side, idmap, bias, fac):
            cols = {side: idmap.ids()}
            if bias is not None:
                cols["bias"] = np.asarray(bias)
            if fac is not None:
                cols.update({f"f{j}": np.asarray(fac)[:, j] for j in range(rank)})
            return pd.DataFrame(cols)

        def write_into(tmp: Path) -> None:
            for side, idmap, bias, fac in (("user", self.user_map_, self.user_bias_, self.user_factors_),
                                           ("item", self.item_map_, self.item_bias_, self.item_factors_)):
                frame = table(side, idmap, bias, fac)
                target = tmp / f"{side}s.{format}"
                if format == "parquet":
                    frame.to_parquet(target, index=False)
                else:
                    frame.to_csv(target, index=False)
            (tmp / "factors.json").write_text(json.dumps({
                "model": type(self).__name__, "global_mean": float(self.global_mean_), "rank": rank,
                "rating_scale": self.rating_scale_,
                "score": "global_mean + user.bias + item.bias + sum_f user.f * item.f",
            }, indent=1))

        return write_dir_atomically(path, write_into, marker="factors.json")
