"""Runs registered experiments through run.py's entry point on fake TFDS data (no download).

    PYTHONPATH=<repo> python tests/e2e/mock_tfds_runs.py --runs_dir DIR --params_override TINY \
        [--daso_params_override KEYS] EXPERIMENT...

The fake data is ``tests/mock_tfds.py`` (each dataset's real structure and per-class
counts). Each experiment is one ``absl.app.run(run.main, argv)`` call, as ``python run.py
...`` makes it; its console output is framed by ``=== <experiment> ===`` and
``=== exit <code> ===`` lines. ``--daso_params_override`` is appended for the experiments whose
learner is DASO (keys another learner does not take would be refused).
"""

import argparse
import sys


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs_dir", required=True)
    parser.add_argument("--params_override", default="")
    parser.add_argument("--daso_params_override", default="")
    parser.add_argument("experiments", nargs="+")
    args = parser.parse_args()

    import keras
    from absl import app

    import experiments
    import run
    from tests.mock_tfds import mock_tfds

    with mock_tfds():
        for experiment in args.experiments:
            print(f"=== {experiment} ===", flush=True)
            overrides = [args.params_override]
            if experiments.get_experiment(experiment).algorithm.name == "daso":
                overrides.append(args.daso_params_override)
            argv = ["run.py", f"--experiment={experiment}", f"--model_dir={args.runs_dir}/{experiment}",
                    "--params_override=" + ",".join(filter(None, overrides))]
            try:
                app.run(run.main, argv=argv)
                code = 0
            except SystemExit as exit_:
                code = exit_.code or 0
            sys.stderr.flush()
            print(f"=== exit {code} ===", flush=True)
            keras.backend.clear_session()


if __name__ == "__main__":
    main()
