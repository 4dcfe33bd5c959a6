"""Chaos Mesh in the local fleet: its CRDs (crds), their installation with a controller Deployment
(install), and the controller the Deployment's pod runs (controller, over kinds, selection, records,
netfaults, stressing, containers); regions says what a region partition of one cluster names."""
