import sys

from vmhealth.cli import main

sys.exit(main())
