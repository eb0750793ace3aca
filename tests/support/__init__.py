"""What several test modules share: generated images, settings for a test gateway, reference
outputs, fakes of the core's protocols. (Servers are started by the local_servers package.)"""
