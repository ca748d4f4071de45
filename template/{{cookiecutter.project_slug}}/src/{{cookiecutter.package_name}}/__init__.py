"""Deep learning tasks trained with PyTorch Lightning and tracked in MLflow: see README.md."""

__version__ = "0.1.0"

# The tracking store used when MLFLOW_TRACKING_URI is not set; a sqlite path is relative to the project.
DEFAULT_TRACKING_URI = {{ cookiecutter.mlflow_tracking_uri|tojson }}
