"""NetBox sync: keeps this node and its peripherals registered in NetBox (issue 13)."""
