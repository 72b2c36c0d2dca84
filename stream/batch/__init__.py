"""`rnnstream batch`: what to read (`inputs`), where results go (`sinks`), the resumable run (`driver`)."""
