"""The camera service: inward and outward camera media joined with their uploads, analysed, published as detections."""
