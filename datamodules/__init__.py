"""DataModules: each parses one kind of file on disk and vectorizes it into batches of tensors."""
