"""One screen per file: setup, train, export, chat, runs, help."""
