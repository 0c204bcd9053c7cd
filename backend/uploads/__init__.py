"""Uploads: files a user stores, in a local directory or on R2/S3."""
