"""``python -m tinydan.datasets make-sample``: build the bundled offline sample from the official files."""

from .sample_maker import main

raise SystemExit(main())
