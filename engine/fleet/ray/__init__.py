"""Workers as Ray actors (`argus serve --launcher ray`): the launcher, its blocking calls, the GCS watch, Ray's logs."""
