"""The ``sarseg`` Processing provider and its algorithms (thin wrappers over ``core``)."""
