"""`python -m tumord.config` prints the shipped config.yaml: every setting, its default and its use."""
import sys

from tumord.config import default_yaml

sys.stdout.write(default_yaml())
