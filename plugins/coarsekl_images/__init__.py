"""coarsekl_images: image data, initial states and the paper's reverse/forward kernels."""
