"""Helpers the tests share (not tests): harnesses, peers, recorded data."""
