import sys

from operatord.cli import main

sys.exit(main())
