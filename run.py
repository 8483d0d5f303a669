"""Train, evaluate or export a registered DASO experiment (the researcher's entry point).

    python run.py --experiment=cifar10_lt_n1500
    python run.py --list_experiments
    python run.py --help

The command is ``daso_tf.cli`` (installed as ``daso-tf``); see its docstring and the README.
"""

from daso_tf.cli import main, resolve_config, run  # noqa: F401

if __name__ == "__main__":
    run()
