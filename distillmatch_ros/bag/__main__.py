"""``python -m distillmatch_ros.bag {bag-eval,make-bag,demo}`` (same as the ``distillmatch`` command)."""
import sys

from .cli import main

sys.exit(main())
