"""How long reading a sweep's fold records from a bucket takes, one at a time and concurrently.

    python benchmarks/bucket_reads.py [--records 500] [--samples 100] [--latency-ms 0 20]

Starts an S3 server (moto) on 127.0.0.1, writes `--records` fold records of realistic size
(per-sample validation probabilities for `--samples` samples) under s3://bench/sweep, and times
`store.read_fold_results` (what the leaderboard, status and report read first) with 1 and with
`location.BUCKET_READ_THREADS` concurrent reads, for each added latency per request: 0 is this
server as it is (a few milliseconds, in this process), 20 is closer to a real bucket's round trip.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import time

from dfu_train import location
from dfu_train.location import Location
from dfu_train.results import store


COHORT, FOLDS = "c0ffee00c0ffee00", "f01d5f01d5f01d5f"


def fake_record(index: int, samples: int) -> dict:
    """A record of the shape and size dfu writes (validated like any other when read)."""
    rng = random.Random(index)
    return {"config_id": f"{index // 5:010x}", "fold_seed": 42, "fold": index % 5, "n_folds": 5,
            "config": {}, "params": {}, "progress": 10, "stages": {},
            "metrics": {"qwk": rng.random(), "accuracy": rng.random(), "macro_f1": rng.random()},
            "meta_qwk": rng.random(), "fusion_gain": 0.0,
            "cohort_fingerprint": COHORT, "fold_fingerprint": FOLDS,
            "val_samples": [{"label": rng.randrange(3), "proba": [rng.random() for _ in range(3)],
                             "sample_id": f"P{rng.randrange(1000)}A{i}D1"}
                            for i in range(samples)]}


def fake_manifest(records: int) -> dict:
    return {"name": "sweep", "spec": {"cv": {"seed": 42, "n_folds": 5}}, "data_root": "/data",
            "cohort_fingerprint": COHORT, "folds": list(range(5)),
            "configs": [{"config_id": f"{i:010x}", "params": {}}
                        for i in range((records + 4) // 5)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 20.0])
    args = parser.parse_args()

    import boto3
    from moto import server as moto_server

    latency = {"s": 0.0}
    answer = moto_server.DomainDispatcherApplication.__call__

    def answer_late(self, environ, start_response):
        time.sleep(latency["s"])
        return answer(self, environ, start_response)

    moto_server.DomainDispatcherApplication.__call__ = answer_late

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_EC2_METADATA_DISABLED="true")
    try:
        boto3.client("s3").create_bucket(Bucket="bench")
        sweep_dir = Location("s3://bench/sweep")
        records = [fake_record(i, args.samples) for i in range(args.records)]
        started = time.perf_counter()
        store.write_json_atomic(sweep_dir / store.MANIFEST, fake_manifest(args.records))
        for record in records:
            store.write_fold_result(sweep_dir, record)
        size = len((store.fold_result_path(sweep_dir, "0000000000", 42, 0)).read_bytes())
        print(f"{args.records} records of {size / 1024:.1f} KiB written in "
              f"{time.perf_counter() - started:.1f} s")
        threads = location.BUCKET_READ_THREADS
        for latency_ms in args.latency_ms:
            latency["s"] = latency_ms / 1000
            for count in (1, threads):
                location.BUCKET_READ_THREADS = count
                started = time.perf_counter()
                read = store.read_fold_results(sweep_dir)
                seconds = time.perf_counter() - started
                assert len(read) == args.records
                print(f"+{latency_ms:.0f} ms a request, {count:2d} concurrent reads: "
                      f"{seconds:.2f} s ({1000 * seconds / args.records:.1f} ms a record)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
