"""Pipeline stages (one function per stage) and the runner that chains them."""
