"""The worked examples behind the notebooks and ``python -m pyro_csg demo``.

* :mod:`pyro_csg.examples.breast_cancer`: Bayesian logistic regression on scikit-learn's
  bundled breast-cancer data (notebook 1);
* :mod:`pyro_csg.examples.mixture`: the paper's mixture of 25 Gaussians, cSGLD against
  SGLD and NUTS (notebook 2);
* :mod:`pyro_csg.examples.digits`: a Bayesian MLP on the bundled digits, cSGHMC against
  SGHMC, SGD and MC dropout (notebook 3);
* :mod:`pyro_csg.examples.metrics`: accuracy, NLL, calibration error, disagreement.

The data sets need scikit-learn: ``pip install 'pyro-csg[demo]'``.
"""
