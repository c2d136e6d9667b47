"""``python -m devtools.plan``: the offline plan of a stack (``devtools.plan.report``)."""

from devtools.plan.report import main

raise SystemExit(main())
