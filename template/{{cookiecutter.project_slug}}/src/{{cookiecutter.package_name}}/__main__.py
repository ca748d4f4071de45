"""``python -m {{ cookiecutter.package_name }} fit|validate|test|predict --config configs/<task>.yaml``."""

from .cli import main
from .quiet import quiet_terminal

if __name__ == "__main__":
    quiet_terminal()  # VERBOSE=1 shows what it silences
    main()
