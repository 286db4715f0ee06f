"""Packaging and deploying the functions to Huawei Cloud FunctionGraph (``python -m deploy --help``)."""
