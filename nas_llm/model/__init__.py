"""Models and sub-networks: family tables, loading, masking, slicing, search spaces and costs."""
