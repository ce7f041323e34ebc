"""`argus bench ...`: each benchmark prints a table, writes JSON, and reports ratios to a baseline run beside it."""
