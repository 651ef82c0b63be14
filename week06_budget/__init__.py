"""Week 6: a compute budget enforced in code, data versions with manifests, A/B with statistics, IsoFLOP scaling."""
