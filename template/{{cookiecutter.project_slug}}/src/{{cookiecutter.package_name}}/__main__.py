"""``python -m {{ cookiecutter.package_name }} fit|validate|test|predict --config configs/<task>.yaml``."""

from .cli import main

if __name__ == "__main__":
    main()
