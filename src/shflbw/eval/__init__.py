"""Evaluation of sentence-embedding models on the labelled data that ships with gensim."""
