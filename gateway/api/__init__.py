"""The gRPC API's schema (image_search.proto, package imagesearch.v1) and the Python code protoc
generates from it (``make proto``): messages in image_search_pb2, stubs in image_search_pb2_grpc.

    import grpc
    from gateway.api import image_search_pb2 as pb, image_search_pb2_grpc as pb_grpc

    stub = pb_grpc.ImageSearchStub(grpc.insecure_channel("localhost:50051"))
    hits = stub.SearchText(pb.SearchTextRequest(query="a red bicycle", k=5), metadata=[("x-api-key", key)])
"""
