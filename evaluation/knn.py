"""kNN classification on latent means (ByPE Fig. 4, reference analysis `--KNN`).

References are the training and validation images, queries the test images, all embedded by the
encoder mean of the top latent. Neighbours are retrieved once (Euclidean, scikit-learn) for the largest
K and each K votes among its first K: majority label, ties to the lowest class index (as the reference
code and scikit-learn's KNeighborsClassifier do).
"""

import numpy as np
from sklearn.neighbors import NearestNeighbors

KS = (3, 5, 7, 9, 11, 13, 15)


def knn_accuracy(references, reference_labels, queries, query_labels, ks=KS):
    """{K: accuracy in [0, 1]} of the K-nearest-neighbour vote of each query among the references."""
    references = np.asarray(references, dtype="float32")
    queries = np.asarray(queries, dtype="float32")
    reference_labels = np.asarray(reference_labels).astype("int64")
    query_labels = np.asarray(query_labels).astype("int64")
    ks = sorted(int(k) for k in ks)
    if ks[0] < 1 or ks[-1] > len(references):
        raise ValueError(f"K must lie in [1, {len(references)}] (the number of references), got {ks}")
    if len(reference_labels) != len(references) or len(query_labels) != len(queries):
        raise ValueError("kNN needs one label per reference and per query")
    neighbours = NearestNeighbors(n_neighbors=ks[-1]).fit(references).kneighbors(queries, return_distance=False)
    votes = reference_labels[neighbours]  # [Q, K_max], nearest first
    num_classes = int(max(reference_labels.max(), query_labels.max())) + 1
    accuracy = {}
    one_hot = votes[:, :, None] == np.arange(num_classes)  # [Q, K_max, C]
    for k in ks:
        counts = one_hot[:, :k].sum(axis=1)
        accuracy[k] = float(np.mean(np.argmax(counts, axis=1) == query_labels))  # argmax: lowest index on ties
    return accuracy
