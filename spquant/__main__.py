import sys

from spquant.cli import main

sys.exit(main())
