"""SageMaker Ground Truth: the backend, its regional ARNs, private work teams and job chaining."""
