"""The C-speed core: HDR histograms and the epoll request engine (Cython, GIL released).

Nothing here knows about gRPC or protobuf; the worker compiles scenarios into plans for it.
"""
