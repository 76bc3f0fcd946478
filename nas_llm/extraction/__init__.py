"""From a chosen sub-network to a standalone model: extraction, least squares, recovery, model cards."""
