"""Running the entry scripts as SageMaker jobs."""
