package api

import "github.com/gin-gonic/gin"

func (s *Server) listTasks(c *gin.Context)   { notYet(c) }
func (s *Server) queueTasks(c *gin.Context)  { notYet(c) }
func (s *Server) webhook(c *gin.Context)     { notYet(c) }
func (s *Server) getTask(c *gin.Context)     { notYet(c) }
func (s *Server) taskLog(c *gin.Context)     { notYet(c) }
func (s *Server) taskOutlog(c *gin.Context)  { notYet(c) }
func (s *Server) cancelTask(c *gin.Context)  { notYet(c) }
func (s *Server) setProgress(c *gin.Context) { notYet(c) }
func (s *Server) retryTask(c *gin.Context)   { notYet(c) }
