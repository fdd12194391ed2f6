"""The environment the suite was started in, taken before the fixtures change it (imported first by conftest).

It is what a newcomer's ``make`` runs under; ``tests/integration/newcomer.py`` takes out what ``make test``
and ``uv run`` added on the way.
"""

import os

STARTED_ENV = dict(os.environ)
