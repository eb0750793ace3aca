"""The gRPC transport (imagesearch.v1.ImageSearch, gateway/api/image_search.proto): thin handlers
over the same core service, access control and error kinds as HTTP."""
