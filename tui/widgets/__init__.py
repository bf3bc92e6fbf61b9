"""One widget per file (harlequin `components/`)."""
