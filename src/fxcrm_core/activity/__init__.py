"""Client activity (issue 15): what each client did, read from the log. Being built."""
