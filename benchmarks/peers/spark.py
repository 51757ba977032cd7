"""PySpark job: MLlib ALS on explicit ratings (Zhou et al. 2008, weighted-lambda regularisation).

Spark runs in local mode with ``local[threads]``; the session is started and the data read from
CSV before the clock starts, so ``fit_seconds`` is ``ALS.fit`` alone (it still includes Spark's
job scheduling, which is part of using Spark). Spark scales ``regParam`` by each row's number of
ratings (ALS-WR). Prediction is ``model.transform(test)`` collected to the driver.
"""

import os
import sys
import tempfile

sys.path.append(os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import numpy as np  # noqa: E402
import pyspark  # noqa: E402
from pyspark.ml.recommendation import ALS  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402


def write_csv(path, users, items, values):
    np.savetxt(path, np.column_stack([users, items, values]), fmt=["%d", "%d", "%.6g"], delimiter=",")


def main():
    args = _common.parse_args()
    data = _common.load(args.data)
    spark = (SparkSession.builder.master(f"local[{args.threads}]").appName("bayesmf-bench")
             .config("spark.driver.memory", "6g").config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", str(max(2, args.threads))).getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    schema = "user INT, item INT, rating FLOAT"
    with tempfile.TemporaryDirectory() as tmp:
        write_csv(f"{tmp}/train.csv", data["train_users"], data["train_items"], data["train_values"])
        write_csv(f"{tmp}/test.csv", data["test_users"], data["test_items"], data["test_values"])
        train = spark.read.csv(f"{tmp}/train.csv", schema=schema).cache()
        test = spark.read.csv(f"{tmp}/test.csv", schema=schema).cache()
        train.count(), test.count()  # materialise the cache outside the timed region
        als = ALS(userCol="user", itemCol="item", ratingCol="rating", seed=args.seed,
                  coldStartStrategy="nan", **args.params)
        with _common.Timer() as fit:
            model = als.fit(train)
            model.userFactors.count()  # fit is lazy in parts: force the factors
        with _common.Timer() as predict:
            rows = model.transform(test).select("user", "item", "prediction").collect()
    got = {(r.user, r.item): r.prediction for r in rows}
    pred = np.array([got[pair] for pair in _common.test_pairs(data)])
    spark.stop()
    _common.finish(data, library="pyspark", version=pyspark.__version__, fit_seconds=fit.seconds,
                   n_iter=args.params.get("maxIter", 10), predict_seconds=predict.seconds, pred=pred)


if __name__ == "__main__":
    main()
