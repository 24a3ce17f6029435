"""preftrack trainer: data, preprocessing, the MLP preference model and its export to Triton."""
