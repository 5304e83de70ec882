DROP TABLE deployment_timeline;
DROP TABLE deployments;
