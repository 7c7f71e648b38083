"""Air-gap bundles: export images from a pool into a bundle, verify it, import it.

info       mirrord-bundle.json: what a bundle holds (images, blobs, its base)
select     which pool images a LIST names, and their names in the bundle   [pure]
layouts    reading a bundle in any layout (registry-storage, OCI, docker-archive, packed)
export     `mirrord export`: pool -> bundle, hard links where possible, incremental
pack       `.tar` / `.tar.zst` packing with a SHA256SUMS manifest, and safe unpacking
verify     `mirrord verify`: re-hash every blob, check every manifest's references
importer   `mirrord import`: bundle -> registry, resumable
"""
