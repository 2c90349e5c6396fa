"""The Gaussian-moment neural network (GM-NN): neighbour lists, batching, descriptors, model, training, evaluation and the ASE calculator."""
