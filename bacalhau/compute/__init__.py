"""The compute role: bid on announced jobs, run accepted ones, publish their results.

Import the parts from their modules (`bacalhau.compute.node.Compute`,
`bacalhau.compute.capacity`, ...): this package's own import loads nothing, so light users such
as capacity detection do not pull in the node.
"""
