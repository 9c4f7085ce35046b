"""LightningModules, one subpackage per method."""
