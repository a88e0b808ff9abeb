"""The camera service's entrypoint: media and uploads through the kit's consumer loop."""
