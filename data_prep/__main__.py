"""`python -m data_prep [flags]` prepares data; `python -m data_prep verify DIR...` checks it.

Bad input ends with a one-line error and exit status 1, never a traceback; Ctrl-C with one line
and exit status 130.
"""
import os
import signal
import sys

from data_prep.errors import DataPrepError, Interrupted

# What Ctrl-C prints when prepare has not started (or in verify): nothing was written.
INTERRUPTED = "data_prep: interrupted; nothing was published; run the same command again"
FLAGS = None  # absl's flags, once run() has defined them


def _synthetic_spec():
    """A SyntheticSpec from the --synthetic_* flags given, or None for other sources."""
    from data_prep.sources import synthetic_options, synthetic_spec

    given = {name: FLAGS[name].value for name in synthetic_options() if FLAGS[name].present}
    return synthetic_spec(FLAGS.source, given)


def verify_command(paths):
    """Verifies every half at or below each path; returns the exit status."""
    from data_prep import manifest

    if not paths:
        raise DataPrepError("verify needs a directory: python -m data_prep verify DIR...")
    bad = 0
    for path in paths:
        halves = manifest.find_halves(path)
        if not halves:
            raise DataPrepError(f"no prepared data (manifest.json) at or below {path}; "
                                "prepare it first with python -m data_prep")
        for half in halves:
            problems = manifest.verify(half, full_hash=True)
            bad += bool(problems)
            print(f"{'OK  ' if not problems else 'BAD '} {half}")
            for p in problems:
                print(f"     {p}")
    return 1 if bad else 0


def main(argv):
    args = argv[1:]
    try:
        if args and args[0] == "verify":
            sys.exit(verify_command(args[1:]))
        if args:
            raise DataPrepError(f"unexpected arguments {args}; the only command is `verify DIR`"
                                " (flags are written --name=value)")
        from data_prep.prepare import prepare

        prepare(FLAGS.source, FLAGS.split, FLAGS.out,
                examples_per_class=FLAGS.examples_per_class, source_dir=FLAGS.source_dir,
                tfds_data_dir=FLAGS.tfds_data_dir, overwrite=FLAGS.overwrite,
                synthetic=_synthetic_spec(), num_workers=FLAGS.num_workers,
                progress=FLAGS.progress, image_size=FLAGS.image_size, encoding=FLAGS.encoding)
        # Published: a Ctrl-C from here on would only kill the exit with a signal.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except DataPrepError as e:
        print(f"data_prep: error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        print(f"data_prep: error: {e}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as e:  # prepare's, saying whether it published
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # one line, whatever comes next
        print(f"data_prep: {e}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:  # before prepare started, or in verify: nothing was written
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)


def run():
    """Console entry point (setup.py: data-prep)."""
    global FLAGS
    # data_prep needs no GPU; hidden, TensorFlow cannot reserve memory training jobs need.
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:  # the flags' modules import numpy: a second of start-up that Ctrl-C may cut short
        from absl import app

        from data_prep import cli_flags, flag_errors
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)
    FLAGS = cli_flags.FLAGS
    cli_flags.list_in_help()
    app.run(main, flags_parser=flag_errors.parser("data_prep: ", 1))


if __name__ == "__main__":
    run()
