"""`python -m operatord.testing`: run the embedded API server (what `ApiServer` spawns)."""

import sys

from operatord.testing.apiserver import main

sys.exit(main())
