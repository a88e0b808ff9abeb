"""The camera service's pure logic: the join of media and uploads, its bounds, frame sampling, detections."""
