"""Evaluation of trained runs the way the papers report them (`python -m training.evaluate RUN_DIR`).

One module per metric family, each usable on its own; `report` runs the chosen ones on a run directory
and writes metrics.json, figures/ and report.md atomically:

  active_units   Burda et al.'s count of latent dimensions whose posterior mean varies over the test set
  knn            kNN classification on latent means, K = 3..15 (ByPE Fig. 4)
  tsne           t-SNE of test latent means coloured by label (ByPE Fig. 3)
  samples        sample grids: prior samples, per-component plates, kernel plates, reconstructions,
                 interpolation, iterative generation, component inputs (ByPE Fig. 1-2, Exemplar supp. G)
  augmentation   generative data augmentation of an MLP classifier (ByPE 5.4, Exemplar 5.4)
  frechet        Frechet distance in a classifier's feature space (FID with InceptionV3 for RGB)
  classifier     the small grey-image classifier whose features `frechet` uses for 28x28 data
  curves         loss curves from history.csv
  progress       progress output: Keras's bar on a terminal, plain lines in a log file or pipe
"""
