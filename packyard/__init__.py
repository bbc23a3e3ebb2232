"""Code shared by the scheduler, the agent and ctl: the job spec, resource quantities, the etcd
keyspace and record shapes, overhead profiles, and the generated gRPC API (packyard.v1).

Nothing here may import scheduler, agent or ctl.
"""
